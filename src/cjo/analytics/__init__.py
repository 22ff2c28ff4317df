"""Analytics: measuring journeys from what the storage has recorded."""

from cjo.analytics.report import (
    JourneyReport,
    StepRow,
    format_table,
    journey_report,
    report_data,
)
from cjo.analytics.segments import (
    SegmentSize,
    format_segment_sizes,
    segment_sizes,
    size_instants,
)

__all__ = [
    "JourneyReport",
    "SegmentSize",
    "StepRow",
    "format_segment_sizes",
    "format_table",
    "journey_report",
    "report_data",
    "segment_sizes",
    "size_instants",
]
