"""The one error a shard set raises: it says what is wrong and what to do."""


class ShardError(ValueError):
    """A shard set that is missing, corrupt, incomplete or made with other inputs."""
