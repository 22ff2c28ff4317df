"""Analytics: measuring journeys from what the storage has recorded."""

from cjo.analytics.report import JourneyReport, StepRow, format_table, journey_report

__all__ = ["JourneyReport", "StepRow", "format_table", "journey_report"]
