"""The submission server: uploads on the leaderboard page and through an API, a durable queue, a worker with
leases, moderation with an action log; built on the library functions the CLI uses (``verify_bundle`` and
``publish_entry`` of the board, ``build_site``) and the same templates as the static site.

Module map: :mod:`.config` (settings), :mod:`.db` (SQLAlchemy tables, states), :mod:`.tokens` (hashed tokens),
:mod:`.queue` (state changes, rate limit, leases), :mod:`.uploads` (streamed multipart with a size limit, safe
meta read), :mod:`.worker` (verify → re-score → awaiting approval), :mod:`.moderation` (approve, reject, hide,
unhide, withdraw), :mod:`.publish` (board writes under a file lock, site rebuild), :mod:`.app` (the Starlette
app). The commands are in :mod:`cvit_bench.cli.server`.
"""
