"""The dashboard, /ui: the figures of `router status` per destination,
charts of the last minutes, dead letters (replay, purge), blocked keys
(unblock), pause and resume, behind ROUTER_ADMIN_TOKEN.

The plugin that adds it to the app is router.web.ui.dashboard; this file
imports nothing, so its modules import each other without a cycle.
"""
