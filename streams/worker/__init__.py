"""The Faust worker: the join agent, its tables, timers, checkpoint, emitter and intake."""
