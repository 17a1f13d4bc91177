"""Site health suites: pytest-testinfra files the site owns, run against each host over pinned SSH
(``suites``: the runner; ``plugin``: what the pytest child process loads; ``check``: the read-only
``orchestrator health check``)."""
