"""The delivery log, read, for the CLI and the web alike: steps with their counts and
campaigns with their approval (``status``), the log's events page by page or streamed
(``log``), and a campaign's report (``report``, rendered by ``render``). Every read is
set-based: one grouped query for all steps, never one per step or per row."""

from outreach.review.log import LOG_COLUMNS, LogFilter, iter_log, log_page, log_record, parse_when
from outreach.review.render import render_report
from outreach.review.report import CampaignReport, campaign_report
from outreach.review.status import (
    DETAIL_KEYS,
    CampaignStatus,
    StepRow,
    campaign_status,
    counts_text,
    detail,
    events,
    recipient,
    step_rows,
)

__all__ = [
    "DETAIL_KEYS",
    "LOG_COLUMNS",
    "CampaignReport",
    "CampaignStatus",
    "LogFilter",
    "StepRow",
    "campaign_report",
    "campaign_status",
    "counts_text",
    "detail",
    "events",
    "iter_log",
    "log_page",
    "log_record",
    "parse_when",
    "recipient",
    "render_report",
    "step_rows",
]
