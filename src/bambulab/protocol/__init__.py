"""Sans-IO protocol logic: no sockets, no asyncio, no httpx. Bytes and dicts in, data out."""
