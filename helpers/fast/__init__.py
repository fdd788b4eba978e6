"""Speed code: the same results as the learner's modules, faster. Nothing here changes what is computed.

`scoring` (tiled scoring of a whole split, lean training-batch scores), `extraction` (batched feature
extraction with the CNN as one fused oneDNN Graph), `distributed` (the same update on several processes
under torchrun), `parallel` (independent runs side by side, one thread each), `shards` (features too big for memory,
memory-mapped and read row by row). Each imports only the
learner modules it speeds up; tests hold each equal to the readable version.
"""
