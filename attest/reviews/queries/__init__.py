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
    MyCampaign,
    campaign_dashboard,
    campaign_list,
    is_my_campaign,
    item_history,
    my_campaign,
    my_campaigns,
)
from attest.reviews.queries.inbox import (
    FLAG_SCORE,
    NO_REVIEWER,
    RISK_CLASSES,
    RISK_LABELS,
    BadCursor,
    InboxFilters,
    ItemFilters,
    campaign_items,
    campaign_reviewers,
    count_about,
    counts_and_signoff,
    encode_cursor,
    exception_condition,
    exception_count,
    filter_options,
    flagged_condition,
    has_risk,
    inbox,
    inbox_counts,
    selection_counts,
    selection_ids,
)

__all__ = [
    "FLAG_SCORE", "NO_REVIEWER", "RISK_CLASSES", "RISK_LABELS", "BadCursor", "InboxFilters",
    "ItemFilters", "MyCampaign", "campaign_dashboard", "campaign_items", "campaign_list",
    "campaign_reviewers", "count_about", "counts_and_signoff", "encode_cursor", "exception_condition", "exception_count",
    "filter_options", "flagged_condition", "has_risk", "inbox", "inbox_counts", "is_my_campaign",
    "item_history", "my_campaign", "my_campaigns", "selection_counts", "selection_ids",
]
