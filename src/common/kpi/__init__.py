"""KPIs over a period: pure definitions (measures), SQL reads (reads), and the report that joins them with the
orders' facts from Temporal (report)."""

from common.kpi.measures import OrderFacts
from common.kpi.report import BadPeriod, KpiReport, Period, kpi_report

__all__ = ["BadPeriod", "KpiReport", "OrderFacts", "Period", "kpi_report"]
