"""Serve mongoeco's MongoDB wire-protocol emulator on 127.0.0.1 until SIGTERM (run by scripts/mongo-server).

A development and test stand-in, not a MongoDB server: production points ``kraken_mongo`` at a real MongoDB
(alphakraken's). Runs in its own Python 3.13 venv (``.mongo/venv``), never in the project's venv.

The server binds the port the caller asks for (0: the kernel picks a free one, so two instances never race
for a port) and writes the port it got to ``--port-file`` only once it accepts connections; the caller waits
for that file rather than guessing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from mongoeco.engines import SQLiteEngine
from mongoeco.wire import AsyncMongoEcoProxyServer


async def serve(database: Path, port: int, port_file: Path) -> None:
    """Serve ``database`` (an SQLite file: data survives a SIGKILL) until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = AsyncMongoEcoProxyServer(engine=SQLiteEngine(str(database)), host="127.0.0.1", port=port)
    async with server:
        # Written to a temporary name and renamed, so a reader never sees half a number.
        partial = port_file.with_suffix(".partial")
        partial.write_text(f"{server.address.port}\n")
        os.replace(partial, port_file)
        print(
            f"MongoDB wire emulator (mongoeco) on 127.0.0.1:{server.address.port}, data in {database}",
            flush=True,
        )
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True, help="SQLite file holding the data")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--port-file", type=Path, required=True, help="written with the port once serving")
    args = parser.parse_args()
    asyncio.run(serve(args.database, args.port, args.port_file))


if __name__ == "__main__":
    main()
