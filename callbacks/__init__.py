"""Lightning callbacks of minituner, one per file, one config each under ``conf/callbacks/``.

Most also implement ``minituner.callbacks.run_hooks.RunHooks`` to see the moments around ``fit``.
"""
