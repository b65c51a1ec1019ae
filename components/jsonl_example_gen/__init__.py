"""JsonlExampleGen: a file-based ExampleGen for per-task JSON Lines folders, with a rejected-records output."""

from mtnlp.components.jsonl_example_gen.component import JsonlExampleGen, RejectedRecords

__all__ = ["JsonlExampleGen", "RejectedRecords"]
