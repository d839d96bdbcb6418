/* A shared library that is not a Leitsystem plugin: it lacks the entry symbol. */
int leitsystem_unrelated(void) { return 42; }
