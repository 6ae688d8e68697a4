"""`mobiledeploy sweep`: variants x targets as content-keyed steps on Ray or local processes."""
