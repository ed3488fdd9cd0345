"""The status page's own words in each language (the notices bring theirs)."""

from __future__ import annotations

PAGE_LANGUAGES = ("zh-CN", "zh-HK", "en")
LANGUAGE_NAMES = {"zh-CN": "简体中文", "zh-HK": "繁體中文（香港）", "en": "English"}

LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "status_page": "服务状态", "current": "当前事件", "past": "过去{days}天的事件",
        "none_current": "目前各项服务运行正常。", "none_past": "此期间没有事件。",
        "updates": "公告记录", "eta": "预计恢复时间", "eta_unknown": "尚未确定",
        "eta_history": "预计恢复时间的变更", "next_update": "下次更新不晚于",
        "manual": "人工服务渠道", "hotline": "客服热线", "hours": "服务时间",
        "counters": "网点服务", "workaround": "临时办法", "branches_closed": "暂停营业的网点",
        "branches_open": "附近照常营业的网点", "branches_none_open": "附近没有照常营业的网点。",
        "km": "{km} 公里", "resolved_at": "恢复时间", "started": "开始", "back": "返回服务状态",
        "language": "语言", "feeds": "订阅", "announced": "公布于", "region": "地区",
        "initial": "事件通告", "update": "进展", "eta_changed": "预计恢复时间变更",
        "resolved": "已恢复",
        "investigating": "正在排查", "identified": "已查明原因", "monitoring": "已修复，观察中",
        "operational": "各项服务运行正常", "disrupted": "部分服务受影响",
        "system_failure": "系统故障", "natural_disaster": "自然灾害",
    },
    "zh-HK": {
        "status_page": "服務狀態", "current": "現時事件", "past": "過去{days}天的事件",
        "none_current": "目前各項服務運作正常。", "none_past": "此期間沒有事件。",
        "updates": "公告記錄", "eta": "預計恢復時間", "eta_unknown": "尚未確定",
        "eta_history": "預計恢復時間的更改", "next_update": "下次更新不遲於",
        "manual": "人工服務渠道", "hotline": "客戶服務熱線", "hours": "服務時間",
        "counters": "分行服務", "workaround": "臨時辦法", "branches_closed": "暫停營業的分行",
        "branches_open": "附近照常營業的分行", "branches_none_open": "附近沒有照常營業的分行。",
        "km": "{km} 公里", "resolved_at": "恢復時間", "started": "開始", "back": "返回服務狀態",
        "language": "語言", "feeds": "訂閱", "announced": "公布於", "region": "地區",
        "initial": "事件通告", "update": "進展", "eta_changed": "預計恢復時間更改",
        "resolved": "已恢復",
        "investigating": "正在調查", "identified": "已找出原因", "monitoring": "已修復，觀察中",
        "operational": "各項服務運作正常", "disrupted": "部分服務受影響",
        "system_failure": "系統故障", "natural_disaster": "自然災害",
    },
    "en": {
        "status_page": "Service status", "current": "Current incidents",
        "past": "Incidents in the past {days} days",
        "none_current": "All services are running normally.",
        "none_past": "No incidents in this period.",
        "updates": "Notices", "eta": "Estimated recovery", "eta_unknown": "not known yet",
        "eta_history": "Changes to the estimated recovery time",
        "next_update": "Next update by", "manual": "Manual service channel",
        "hotline": "Hotline", "hours": "Hours", "counters": "At our branches",
        "workaround": "Meanwhile", "branches_closed": "Branches closed",
        "branches_open": "Branches open nearby",
        "branches_none_open": "No branch nearby is open.", "km": "{km} km",
        "resolved_at": "Recovered", "started": "Started", "back": "Back to service status",
        "language": "Language", "feeds": "Feeds", "announced": "announced", "region": "Region",
        "initial": "Incident notice", "update": "Update", "eta_changed": "New recovery estimate",
        "resolved": "Resolved",
        "investigating": "Investigating", "identified": "Cause identified",
        "monitoring": "Fix applied, monitoring",
        "operational": "All services are running normally",
        "disrupted": "Some services are disrupted",
        "system_failure": "System failure", "natural_disaster": "Natural disaster",
    },
}
