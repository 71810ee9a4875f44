"""cryptovol's developer tooling: the local Kafka broker, the local stack
runner and the fake exchange. Installed by ``make install``; no service depends
on it, so no production image contains it."""
