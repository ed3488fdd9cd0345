"""The public status page: the public view of the record (model), its HTML (templates under
templates/page/), the Statuspage-shaped API (api), the feeds (feeds), and writing it all
atomically (writer). Reads only customer notices: never drills, internal updates or customer
data (see model.py)."""
