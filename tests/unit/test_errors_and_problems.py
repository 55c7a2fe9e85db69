import pytest

from iogate import errors
from iogate.wire.problems import problem_for


def test_error_hierarchy_matches_the_architecture() -> None:
    assert issubclass(errors.OperationTimeout, TimeoutError)
    assert issubclass(errors.UnknownResourceError, LookupError)
    assert issubclass(errors.InvalidInputError, ValueError)
    for leaf in (
        errors.TransientDatabaseError,
        errors.IntegrityError,
        errors.QueryError,
        errors.ReadOnlyViolation,
    ):
        assert issubclass(leaf, errors.DatabaseError)
    for leaf in (errors.UpstreamConnectionError, errors.UpstreamHTTPError):
        assert issubclass(leaf, errors.UpstreamError)
    for cls in (errors.DatabaseError, errors.UpstreamError, errors.CircuitOpenError):
        assert issubclass(cls, errors.OperationError)
        assert issubclass(cls, errors.IogateError)


def test_context_travels_on_the_error() -> None:
    exc = errors.IntegrityError(
        "dup", constraint="users_email_key", sqlstate="23505", resource="pg", operation="query"
    )
    assert (exc.constraint, exc.sqlstate, exc.resource, exc.operation) == (
        "users_email_key",
        "23505",
        "pg",
        "query",
    )
    assert str(exc) == "[pg.query] dup"
    assert exc.attempts == 1


@pytest.mark.parametrize(
    ("exc", "status", "slug"),
    [
        (errors.UnknownResourceError("database", "x"), 404, "unknown-resource"),
        (errors.InvalidInputError("bad path"), 400, "invalid-input"),
        (errors.QueryError("syntax"), 400, "bad-query"),
        (errors.IntegrityError("dup"), 409, "integrity-violation"),
        (errors.ReadOnlyViolation("ro"), 403, "read-only"),
        (errors.TransientDatabaseError("gone"), 503, "database-unavailable"),
        (errors.RateLimitedError("slow down", retry_after_s=1.2), 429, "rate-limited"),
        (errors.CircuitOpenError("open", retry_after_s=3), 503, "circuit-open"),
        (errors.BulkheadFullError("full"), 503, "bulkhead-full"),
        (errors.OperationTimeout("late"), 504, "timeout"),
        (errors.UpstreamConnectionError("refused"), 502, "upstream-unreachable"),
        (errors.UpstreamHTTPError("500", status=500), 502, "upstream-error"),
    ],
)
def test_each_error_maps_to_one_problem_type(
    exc: errors.IogateError, status: int, slug: str
) -> None:
    kind, body = problem_for(exc)
    assert (kind.status, body["status"]) == (status, status)
    assert body["type"] == f"urn:iogate:problem:{slug}"
    assert body["detail"] == str(exc)
    if getattr(exc, "retry_after_s", None) is not None:
        assert body["retry_after_s"] == exc.retry_after_s  # type: ignore[attr-defined]
