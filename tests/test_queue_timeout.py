"""A fixed C far above a queueing service's capacity keeps requests in its queue longer than the timeout:
they time out and are sent again. The run says so (a time scale hides it: the latency shrinks, the
timeout does not)."""

import pytest

from scoring_lib.bounds import queue_timeout_warning

from conftest import cli, read_rows


def test_the_line_names_the_wait_the_timeout_and_the_ways_out():
    line = queue_timeout_warning(2000, 4.15, 200, 30.0)  # the seed's shape at full scale
    assert "wait there up to 41.5 s, longer than the 30 s timeout" in line
    assert "a C of at most 1400" in line and "--timeout 50" in line  # 7 waves of 4.15 s fit in 30 s
    assert queue_timeout_warning(1400, 4.15, 200, 30.0) is None
    assert queue_timeout_warning(2000, 4.15 * 0.05, 200, 30.0) is None  # time scale 0.05: hidden
    assert queue_timeout_warning(2000, 4.15, None, 30.0) is None  # capacity unknown: nothing to say
    assert queue_timeout_warning(float("inf"), 4.15, 200, 30.0) is None


@pytest.mark.parametrize("extra, warned", [([], True), (["--max-concurrent-tasks", "auto"], False),
                                           (["--timeout", "5"], False)])
def test_score_warns_when_its_fixed_c_would_queue_past_the_timeout(tmp_path, extra, warned):
    # 40 lines at 40 in flight against a service serving 4 at once, 0.1 s each: the last wave waits 1 s.
    text = tmp_path / "in.txt"
    text.write_text("".join(f"line {i}\n" for i in range(40)))
    args = ["score", str(text), "--output", str(tmp_path / "o.jsonl"), "--no-record", "--max-concurrent-tasks", "40",
            "--timeout", "0.6", "--max-retries", "20", "--server-latency", "0.1", "--server-time-scale", "1",
            "--server-capacity", "4"]
    proc = cli(*args, *extra)
    assert proc.returncode == 0, proc.stderr
    assert ("longer than the 0.6 s timeout" in proc.stderr) == warned, proc.stderr
    assert len(read_rows(tmp_path / "o.jsonl")) == 40
