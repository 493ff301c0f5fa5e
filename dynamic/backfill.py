"""Placeholder until the backfill engine lands."""


class _Remove:
    def __repr__(self) -> str:
        return "dynamic.REMOVE"


REMOVE = _Remove()
