"""vLLM's step and request semantics as pure logic, importing no vLLM: what a step's batch holds
(read on the hot path from counts vLLM already computed), and, on the export side, the assembly of
the hooks' raw records into span attributes, links, request spans and the split of the gap between
two model executions. Unit-tested without vLLM (tests/unit)."""
