"""SmartJoiner's Python call, on smart-joiner (Rust): the same batch `smart-joiner run` runs.

    from smart_joiner import SmartJoiner
    joiner = SmartJoiner(accounts_config_path='accounts_config.json')
    report = await joiner.run_batch(niche='ukraine_cars', batch_size=5)

Settings come from the environment as the command reads them: DATABASE_URL, else SmartJoiner's
POSTGRES_HOST/PORT/USER/PASSWORD/DB, else SQLite smart_joiner.db; JOIN_PAUSE_MIN and the other
pacing variables. The database must be migrated first (`smart-joiner migrate up`, or `migrate
adopt` for SmartJoiner's own database).
"""

from ._native import SmartJoiner as _Native

__all__ = ["SmartJoiner"]


class SmartJoiner:
    """One pool of accounts (`pool`) joining the targets of the database."""

    def __init__(
        self,
        accounts_config_path="accounts_config.json",
        database_url=None,
        pool="default",
        max_wait_seconds=1200,
    ):
        self._native = _Native(
            accounts_config_path=str(accounts_config_path),
            database_url=database_url,
            pool=pool,
            max_wait_seconds=max_wait_seconds,
        )

    async def run_batch(self, niche="ukraine_cars", batch_size=5):
        """Leftovers plus up to `batch_size` new targets of `niche`, each to its end.

        Returns a dict: niche, batch_size, taken, joined, by_status, interrupted. Raises
        RuntimeError (what went wrong, without any secret) or ValueError (a bad setting).
        """
        return await self._native.run_batch(niche, batch_size)

    def __repr__(self):
        return repr(self._native)
