"""Plane and sphere geometry for warning areas: great-circle distance, polygons, circles.

Points are (latitude, longitude) in decimal degrees, the order CAP 1.2 uses. Polygons are
tested on the lat/lon plane, which is what CAP means by a polygon; areas that cross the
antimeridian are not supported (no CAP issuer near our branches draws one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG); the error against WGS 84 is under 0.5 %

Point = tuple[float, float]
# Collinearity tolerance in squared degrees: about a millimetre at our latitudes.
_EPSILON = 1e-12


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def polygon_area(polygon: Sequence[Point]) -> float:
    """Unsigned area in square degrees (shoelace formula); 0 for a degenerate polygon."""
    total = 0.0
    for (lat1, lon1), (lat2, lon2) in zip(polygon, [*polygon[1:], *polygon[:1]], strict=True):
        total += lon1 * lat2 - lon2 * lat1
    return abs(total) / 2


def in_polygon(lat: float, lon: float, polygon: Sequence[Point]) -> bool:
    """Whether the point lies inside the polygon or on its edge (ray casting on lat/lon).

    A point on the boundary counts as inside: a branch on the edge of a warning area is
    treated as affected. A polygon with no area (fewer than three distinct corners, or all
    corners on one line) contains nothing.
    """
    if len(polygon) < 3 or polygon_area(polygon) <= _EPSILON:
        return False
    inside = False
    for (lat1, lon1), (lat2, lon2) in zip(polygon, [*polygon[1:], *polygon[:1]], strict=True):
        if _on_segment(lat, lon, lat1, lon1, lat2, lon2):
            return True
        # Half-open rule (one end inclusive, the other not) so a ray through a vertex
        # is counted once, not twice.
        if (lat1 > lat) != (lat2 > lat):
            crossing_lon = lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1)
            if lon < crossing_lon:
                inside = not inside
    return inside


def in_circle(lat: float, lon: float, centre_lat: float, centre_lon: float,
              radius_km: float) -> bool:
    """Whether the point is within `radius_km` (great-circle distance) of the centre."""
    return haversine_km(lat, lon, centre_lat, centre_lon) <= radius_km


def _on_segment(lat: float, lon: float, lat1: float, lon1: float, lat2: float,
                lon2: float) -> bool:
    cross = (lat2 - lat1) * (lon - lon1) - (lon2 - lon1) * (lat - lat1)
    if abs(cross) > _EPSILON:
        return False
    return (min(lat1, lat2) <= lat <= max(lat1, lat2)
            and min(lon1, lon2) <= lon <= max(lon1, lon2))
