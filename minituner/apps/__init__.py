"""The console scripts, one module each (train, preview, count, merge, sweep_report), and ``runner``.

``runner`` starts them as child processes, as a user would (the preview, benchmarks and tests use
it); the library never imports anything from here.
"""
