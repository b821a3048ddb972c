from scoring_lib.cache import ScoreCache, cache_namespace


def test_scores_persist_across_instances_and_namespaces_are_apart(tmp_path):
    path = tmp_path / "c.sqlite"
    ns = cache_namespace("http://127.0.0.1:1/score", "text", "score")
    c = ScoreCache(path, ns)
    c.put_many([(c.key("a"), 0.25)])
    c.close()
    again = ScoreCache(path, ns)
    assert again.get(again.key("a")) == 0.25
    assert again.get(again.key("b")) is None
    other = ScoreCache(path, cache_namespace("http://127.0.0.1:1/score", "text", "value"))
    assert other.get(other.key("a")) is None


def test_lru_is_bounded_and_falls_back_to_sqlite(tmp_path):
    c = ScoreCache(tmp_path / "c.sqlite", "ns", lru_size=3)
    c.put_many([(c.key(str(i)), float(i)) for i in range(10)])
    assert c.in_memory <= 3
    assert c.get(c.key("0")) == 0.0 and len(c) == 10


def test_no_path_uses_a_temporary_store_that_is_removed(tmp_path):
    c = ScoreCache(None, "ns")
    c.put_many([(c.key("x"), 1.0)])
    path = c.path
    assert path.exists()
    c.close()
    assert not path.exists()


def test_the_cache_never_stores_texts(tmp_path):
    path = tmp_path / "c.sqlite"
    c = ScoreCache(path, "ns")
    c.put_many([(c.key("a very recognisable sentence"), 0.5)])
    c.close()
    assert b"recognisable" not in path.read_bytes()


def test_the_run_local_store_spills_what_the_lru_lets_go():
    cache = ScoreCache(None, "ns", lru_size=10)
    keys = [cache.key(str(i)) for i in range(3000)]
    for start in range(0, 3000, 7):
        cache.put_many([(k, float(i)) for i, k in enumerate(keys[start:start + 7], start)])
    try:
        assert all(cache.get(k) == float(i) for i, k in enumerate(keys))
        assert cache.get(cache.key("never stored")) is None
        assert len(cache) == 3000
    finally:
        cache.close()


def test_the_memory_of_the_cache_is_bounded_by_its_size_not_the_lines_seen(tmp_path):
    """Whatever the input's length, memory holds at most lru_size scores, in dicts that stop growing:
    after 40 generations of distinct keys the dicts take no more room than after 4, and a key let go is
    still found (in the file). Run-local, keys never seen are answered without reading the file."""
    import sys

    for path in (None, tmp_path / "c.sqlite"):
        cache = ScoreCache(path, "ns", lru_size=1000)
        try:
            sizes = []
            for i in range(20_000):
                cache.put_many([(cache.key(str(i)), float(i))])
                assert cache.in_memory <= 1000
                if i + 1 in (2_000, 20_000):
                    sizes.append(sys.getsizeof(cache._young) + sys.getsizeof(cache._old))
            assert sizes[1] <= sizes[0]
            assert cache.get(cache.key("7")) == 7.0 and cache.get(cache.key("19999")) == 19999.0
            if path is None:
                reads = []
                cache._db.set_trace_callback(reads.append)
                assert all(cache.get(cache.key(f"never {i}")) is None for i in range(1000))
                assert len(reads) < 50  # the filter's false positives only (some 0.05% at 20,000 keys)
        finally:
            cache.close()


def test_a_cache_damaged_mid_file_is_one_line_and_exit_3_not_a_traceback(tmp_path):
    """A cache whose file was damaged in the middle opens fine and fails on the first lookup that reaches
    the damage: one line naming the file and what to do, exit 3, no output, never a traceback or exit 1."""
    from conftest import cli

    lines = tmp_path / "in.txt"
    lines.write_text("".join(f"line {i}\n" for i in range(3000)), encoding="utf-8")
    common = ["--server-time-scale", "0.001", "--cache", tmp_path / "c.sqlite", "--no-record", "--no-progress"]
    first = cli("score", lines, "--output", tmp_path / "o.jsonl", *common)
    assert first.returncode == 0, first.stderr
    cache = tmp_path / "c.sqlite"
    with open(cache, "r+b") as f:
        f.seek(cache.stat().st_size // 2)
        f.write(b"\x00garbage" * 200)
    again = cli("score", lines, "--output", tmp_path / "o2.jsonl", *common)
    assert again.returncode == 3, again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert "is damaged" in again.stderr and "--no-cache" in again.stderr
    assert not (tmp_path / "o2.jsonl").exists()
