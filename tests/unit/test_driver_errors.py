"""One translation of the driver's errors for every writer and backfill."""

import pytest
from neo4j.exceptions import Neo4jError, ServiceUnavailable

from hsg.db.errors import DatabaseError
from hsg.graph.driver_errors import driver_errors


def refusal(message: str) -> Neo4jError:
    # the driver's own constructor for a server error, as it builds them from the wire
    return Neo4jError._hydrate_neo4j(  # noqa: SLF001
        code="Neo.ClientError.Schema.ConstraintValidationFailed", message=message
    )


def test_a_lost_server_says_what_was_going_on_and_what_is_kept():
    with pytest.raises(DatabaseError) as err:
        with driver_errors("writing", "Everything before this batch is kept."):
            raise ServiceUnavailable("connection refused")
    assert err.value.connection_lost
    assert str(err.value) == (
        "lost the connection to Neo4j while writing: connection refused. "
        "Everything before this batch is kept."
    )


def test_a_lost_server_with_nothing_more_to_say():
    with pytest.raises(DatabaseError, match=r"^lost the connection to Neo4j: gone$"):
        with driver_errors():
            raise ServiceUnavailable("gone")


def test_a_refusal_names_what_was_refused():
    with pytest.raises(DatabaseError) as err:
        with driver_errors("writing", refused="a write"):
            raise refusal("node already exists")
    assert not err.value.connection_lost
    assert str(err.value) == "Neo4j refused a write: node already exists"


def test_without_refused_a_refusal_passes_unchanged():
    with pytest.raises(Neo4jError, match="node already exists"):
        with driver_errors():
            raise refusal("node already exists")
