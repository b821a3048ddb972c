"""--score-field is a path into the reply: `score`, `result.score`, `0.score`; a wrong shape says so."""

import pytest
from aiohttp import web

from scoring_lib.client import WRONG_SHAPE, ScoringClient, extract_score, parse_score
from scoring_lib.failures import FailedAttempt
from scoring_lib.config import ClientConfig


@pytest.mark.parametrize("data,path,value", [
    ({"score": 0.5}, "score", 0.5),
    ({"result": {"score": 0.25}}, "result.score", 0.25),
    ([{"score": 0.75}], "0.score", 0.75),
    ({"a.b": 1}, "a.b", 1),  # a key with a dot is found as it is first
    ({"data": [{"x": 2}, {"x": 3}]}, "data.-1.x", 3),
])
def test_extract_score_follows_the_path(data, path, value):
    assert extract_score(data, path) == value


@pytest.mark.parametrize("data,path", [({"score": 1}, "result.score"), ([{"score": 1}], "1.score"),
                                       ({"result": [1]}, "result.score"), ("text", "score")])
def test_extract_score_names_the_missing_part(data, path):
    with pytest.raises(KeyError):
        extract_score(data, path)


def test_wrong_shape_shows_the_path_and_a_masked_sample():
    body = b'{"output": {"value": 0.3}, "echo": "Bearer sk-SECRET-123", "pad": "' + b"x" * 500 + b'"}'
    with pytest.raises(FailedAttempt) as err:
        parse_score(body, "result.score", secrets=("sk-SECRET-123",))
    msg = str(err.value)
    assert msg.startswith(WRONG_SHAPE) and "'result.score'" in msg and '"output"' in msg
    assert "sk-SECRET-123" not in msg and "***" in msg
    assert len(msg) < 200


@pytest.mark.parametrize("reply,path", [({"result": {"score": 0.25}}, "result.score"), ([{"score": 0.25}], "0.score")])
async def test_client_scores_nested_and_list_replies(aiohttp_server, reply, path):
    async def handle(request):
        return web.json_response(reply)

    app = web.Application()
    app.router.add_post("/score", handle)
    server = await aiohttp_server(app)
    cfg = ClientConfig(url=str(server.make_url("/score")), score_field=path, max_retries=0)
    async with ScoringClient(cfg, concurrency=1) as client:
        out = await client.score("hello")
    assert out.ok and out.score == 0.25
