"""Development set-up: a local Kafka broker, the development PKI and `yrdx init` exchanges; never the runtime's.

local_kafka.py runs a broker from Maven Central jars, pki.py issues the development PKI, exchange.py writes the
four gateway configs of a local exchange. The runtime never imports this package.
"""
