"""Lightning callbacks of minituner, one module each, configured under ``conf/callbacks/``."""
