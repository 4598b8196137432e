"""What every orchestrator's errors carry: a timeout's logs, in the status details."""

from __future__ import annotations

from google.protobuf import struct_pb2

from datamorph_gateway.logstore import RunLog
from datamorph_gateway.status import google_status
from datamorph_gateway.workflows import WorkflowTimeout

from ..fixtures.workflows import timeout_detail


def test_timeout_details_keep_the_newest_entries_that_fit() -> None:
    """Status details travel in a trailer: a long run's logs are cut to the newest ones."""
    entries = [
        {"timestamp": f"t{i}", "type": "info", "title": f"entry {i}", "description": "d",
         "metadata": {"blob": "x" * 500}}
        for i in range(50)
    ]  # fmt: skip
    run_log = RunLog("20250113_123456_0000abcd", entries, "c", "u")
    err = WorkflowTimeout("late", run_id=run_log.run_id, run_log=run_log)
    detail = timeout_detail(err)
    assert detail["log_count"] == 50
    assert detail["logs_truncated"] is True
    titles = [e["title"] for e in detail["logs"]]
    assert titles[-1] == "entry 49"
    assert titles == [f"entry {i}" for i in range(50 - len(titles), 50)]
    # Base64 in grpc-status-details-bin, it stays under gRPC's default 8 KiB metadata limit.
    [packed] = [d for d in google_status(err, "-").details if d.Is(struct_pb2.Struct.DESCRIPTOR)]
    assert len(packed.value) * 4 / 3 < 8192
