from scoring_lib.redact import redact


def test_the_key_bearer_tokens_and_authorization_values_are_masked(monkeypatch):
    monkeypatch.setenv("SCORING_API_KEY", "sk-live/42+x")
    text = ('{"headers": {"Authorization": "Bearer sk-live/42+x", "X": "1"}} key=sk-live/42+x '
            'url=sk-live%2F42%2Bx other: bearer abc.DEF_1-2 Authorization: Basic Zm9v\n next')
    out = redact(text)
    for secret in ("sk-live/42+x", "sk-live%2F42%2Bx", "abc.DEF_1-2", "Zm9v"):
        assert secret not in out
    assert '"X": "1"' in out and "next" in out


def test_plain_text_is_untouched(monkeypatch):
    monkeypatch.delenv("SCORING_API_KEY", raising=False)
    assert redact("HTTP 422: batch requests are not supported") == "HTTP 422: batch requests are not supported"
    assert redact(None) is None and redact("") == ""


def test_url_credentials_are_masked_like_keys():
    from scoring_lib.redact import safe_url

    assert safe_url("http://user:pw@host:8/score") == "http://***@host:8/score"
    assert safe_url("https://tok3n@host/s?a=1&api_key=zz&token=yy#f") == \
        "https://***@host/s?a=1&api_key=***&token=***#f"
    assert safe_url("http://host/score") == "http://host/score" and safe_url(None) is None
    assert redact("cannot connect to http://u:s3cr3t@10.0.0.1/score: refused") == \
        "cannot connect to http://***@10.0.0.1/score: refused"
