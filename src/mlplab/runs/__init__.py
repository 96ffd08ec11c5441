"""The run layer: everything that knows about run folders on disk.

The folder format (`folder`), its checkpoints (`checkpoint`), the writer callback that fills a folder while
training (`writer`), whole train/resume/evaluate sessions (`session`), maps of a run (`maps`), its report and
comparison pages (`report`, `compare`), and config and experiment files (`config`, `experiment`). The layers
below (data, model, train, inspect, viz) hand plain values up to here and never import it.
"""
