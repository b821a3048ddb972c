"""The seed study: an asyncio script plateaued at 84 s, Ray at 43 s, on 2,000 lines at 4.15 s each."""

from . import Study

SEED = Study(
    name="seed", lines=2000, latency=4.15, capacity=200, cpus=10,
    asyncio_pool100_s=83.97, ray_32x64_s=43.0,
    hypothesis=(
        "Hypothesis: the seed's input had 2,000 lines; its asyncio script used aiohttp's default pool of 100 "
        "connections in one session, so at most 100 requests were ever in flight: ceil(2000/100) x 4.15 s = 83.0 s "
        "(seed: 83.97 s). Ray with 32 workers x 64 threads opened many sessions, each with its own pool, so the pool "
        "stopped binding and the service's own limit of about 200 requests at once took over: ceil(2000/200) x "
        "4.15 s = 41.5 s (seed: 43 s). Measured figures below are this workbench's, scaled back to full latency "
        "(measured / time scale)."),
)
