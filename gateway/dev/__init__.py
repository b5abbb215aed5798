"""Development set-up: a local Kafka broker from Maven Central jars, the development PKI and `yrdx init`
exchanges. The runtime never imports it."""
