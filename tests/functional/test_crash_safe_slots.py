"""Rate slots given back (issue 17): a write that granted nothing (someone else's grant, a PIM policy refusal)
releases its ``max_grants_per_hour`` slot; only the winner can release, and only its own claim."""

from __future__ import annotations

from datetime import timedelta

from tests.support.claims import KEY, T0, WINDOW, StoreFactory


async def test_only_the_winner_releases_and_the_slot_can_be_won_again(new_store: StoreFactory) -> None:
    # given a slot won by one claimant
    store = new_store()
    assert (await store.claim(KEY, WINDOW, T0, "first")).won
    # when someone else tries to release it; then nothing happens and it is still held
    assert not await store.release(KEY, "intruder")
    assert not (await new_store().claim(KEY, WINDOW, T0 + timedelta(seconds=1), "second")).won
    # when the winner releases it; then another claimant wins it within the same window
    assert await store.release(KEY, "first")
    assert not await store.release(KEY, "first")
    assert (await new_store().claim(KEY, WINDOW, T0 + timedelta(seconds=2), "third")).won
