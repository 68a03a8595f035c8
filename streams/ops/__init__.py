"""What an operator reads: metrics, health, logs, and the dead-letter tool."""
