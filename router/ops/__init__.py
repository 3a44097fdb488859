"""How a router process reports: one log format, the metrics it counts,
OpenTelemetry spans when tracing is on, an exception as one line,
configured secrets kept out of every text, and background tasks ended for
sure."""
