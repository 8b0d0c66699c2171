"""The demo organisation's names (issue 20, part 7): a manager's reports do not carry their manager's (or
one shared) surname, so searching a surname finds a few people, not a whole team; the `manager` name HR
sends is the manager's own name; the AWS and GitHub sandboxes name the same people the same way."""

from __future__ import annotations

from collections import Counter, defaultdict

from attest.connectors.sandbox.okta_fake import OktaFake, person_name


def _people() -> list[dict]:
    fake = OktaFake(users=300)
    return [fake.users[uid]["profile"] for uid in fake.user_ids]


def test_reports_do_not_share_their_managers_surname():
    people = _people()
    by_number = {p["employeeNumber"]: p for p in people}
    teams: dict[str, list[dict]] = defaultdict(list)
    for p in people:
        if p.get("managerId"):
            teams[p["managerId"]].append(p)
    assert len(teams) > 30
    for manager_number, reports in teams.items():
        manager = by_number[manager_number]
        same = [r for r in reports if r["lastName"] == manager["lastName"]]
        assert len(same) <= 1, (manager["displayName"], [r["displayName"] for r in reports])
        assert len({r["lastName"] for r in reports}) == len(reports)  # a team: every surname different
        assert all(r["manager"] == manager["displayName"] for r in reports)


def test_a_surname_search_matches_a_few_people_not_a_team():
    people = _people()
    counts = Counter(p["lastName"] for p in people)
    assert len(counts) >= 25 and max(counts.values()) <= 12
    # full names stay unique
    assert len({p["displayName"] for p in people}) == len(people)


def test_the_other_sandboxes_name_people_like_the_okta_demo():
    from attest.connectors.sandbox.aws_moto import demo_people
    from attest.connectors.sandbox.github_fake import okta_demo_person

    people = _people()
    for i in (0, 1, 7, 41, 299):
        assert person_name(i) == okta_demo_person(i) == (people[i]["firstName"], people[i]["lastName"])
        assert demo_people(300)[i].email == people[i]["email"]
