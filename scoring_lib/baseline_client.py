"""The bare baseline `bench` compares `score` against: a minimal aiohttp client, nothing else.

One session, C worker coroutines, one POST per line, the score parsed, one JSON row per line written
in input order. No retries, cache, dedupe, records or progress. It is run as a script
(`python baseline_client.py INPUT URL C OUTPUT [lean]`), not imported from the package, so its process
pays for aiohttp alone: the difference from `score` is the workbench's own cost.

As aiohttp's documentation writes it (`json=` in, `resp.json()` out), unless `lean`: then the body goes
as bytes serialized here and the reply is parsed from its bytes, as `score` does (aiohttp's JSON paths
cost a share of their own at zero latency: bench case z shows both baselines).
"""

import asyncio
import json
import sys

import aiohttp

JSON = {"Content-Type": "application/json"}


async def main(path: str, url: str, concurrency: int, output: str, lean: bool = False) -> None:
    with open(path, encoding="utf-8") as f:
        texts = f.read().splitlines()
    scores: list = [None] * len(texts)
    queue = iter(enumerate(texts))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            for i, text in queue:
                if lean:
                    async with session.post(url, data=json.dumps({"text": text}).encode(), headers=JSON) as resp:
                        scores[i] = json.loads(await resp.read())["score"]
                else:
                    async with session.post(url, json={"text": text}) as resp:
                        scores[i] = (await resp.json())["score"]
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    with open(output, "w", encoding="utf-8") as out:
        for i, score in enumerate(scores, 1):
            out.write(json.dumps({"line": i, "score": score}) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:] == ["lean"]))
