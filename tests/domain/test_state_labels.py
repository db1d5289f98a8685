"""One word per state, from the model to every page (issue 6, A.8)."""
from __future__ import annotations

import pytest

from portal.domain.requests import (CHECK_LABELS, STATUS_LABELS, EmailCheck, EndUserCheck,
                                    Status, check_label, status_label)


def test_every_status_has_one_label_of_its_own():
    assert set(STATUS_LABELS) == set(Status)
    assert len(set(STATUS_LABELS.values())) == len(Status)
    assert [status_label(s.value) for s in Status] == [
        "Pending", "Approved", "Denied", "Timed out", "Cancelled"]


@pytest.mark.parametrize("check, states", [("end_user", EndUserCheck), ("email", EmailCheck)])
def test_every_check_state_has_one_label_of_its_own(check, states):
    assert set(CHECK_LABELS[check]) == set(states)
    assert len(set(CHECK_LABELS[check].values())) == len(states)
    assert all(check_label(state.value, check) for state in states)


def test_the_same_state_reads_the_same_everywhere():
    assert check_label("timed_out", "email") == status_label("timed_out") == "Timed out"
    assert check_label("denied", "email") == status_label("denied") == "Denied"
