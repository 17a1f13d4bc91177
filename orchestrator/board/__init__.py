"""The crisis cell's board: a live, read-only web page that follows a run's journal.

``orchestrator board`` serves it (:mod:`orchestrator.board.app`); the journal is its only source
(:mod:`orchestrator.board.follower`), read through the report's builder (:mod:`orchestrator.board.state`).
"""
