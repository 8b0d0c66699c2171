"""Read queries for the reviewer inbox and the admin campaign pages.

The inbox pages by KEYSET, never by OFFSET: items are ordered by person then id, and `after` is an
opaque cursor holding the last row's (person_name, id). Rows with a person come first (by name, id);
orphaned items (no person) follow, by id. Each part is a plain range scan of the index
`ix_review_item_inbox (reviewer_id, campaign_id, person_name, id)`, on SQLite and PostgreSQL alike,
so a page deep in a 10,000-item inbox costs what the first page costs.

Items a reviewer reviews and items escalated to them (co-reviewer) are two lists (`role`), each keyset
paginated on its own index.

The package (its names are re-exported here, as `queries.<name>` is what the rest of Attest uses):

- `inbox`: filters, cursors, conditions, pages of items, selections and counts
- `campaign_pages`: a reviewer's campaigns, the campaign list, the dashboard, an item's history
"""

from __future__ import annotations

from attest.reviews.queries.campaign_pages import (
    CampaignDashboard,
    CampaignRow,
    MyCampaign,
    ReviewerProgress,
    campaign_dashboard,
    campaign_list,
    is_my_campaign,
    item_history,
    my_campaigns,
)
from attest.reviews.queries.inbox import (
    DECISION_FILTERS,
    FLAG_RISKS,
    FLAG_SCORE,
    MAX_CURSOR,
    NO_REVIEWER,
    OUTCOME_FILTERS,
    RISK_CLASSES,
    RISK_LABELS,
    ROLES,
    BadCursor,
    InboxCounts,
    InboxFilters,
    InboxPage,
    ItemFilters,
    PersonGroup,
    Progress,
    campaign_items,
    campaign_reviewers,
    count_about,
    counts_and_signoff,
    decode_cursor,
    encode_cursor,
    exception_condition,
    exception_count,
    filter_options,
    flagged_condition,
    group_by_person,
    has_risk,
    inbox,
    inbox_counts,
    keyset_page,
    selection_count,
    selection_counts,
    selection_ids,
)

__all__ = [
    "BadCursor", "CampaignDashboard", "CampaignRow", "DECISION_FILTERS", "FLAG_RISKS", "FLAG_SCORE",
    "InboxCounts", "InboxFilters", "InboxPage", "ItemFilters", "MAX_CURSOR", "MyCampaign", "NO_REVIEWER",
    "OUTCOME_FILTERS", "PersonGroup", "Progress", "RISK_CLASSES", "RISK_LABELS", "ROLES", "ReviewerProgress",
    "campaign_dashboard", "campaign_items", "campaign_list", "campaign_reviewers", "decode_cursor",
    "encode_cursor", "exception_condition", "exception_count", "filter_options", "flagged_condition",
    "group_by_person", "has_risk", "count_about", "counts_and_signoff",
    "inbox", "inbox_counts", "is_my_campaign", "item_history", "keyset_page",
    "my_campaigns", "selection_count", "selection_counts", "selection_ids",
]
