// glibc's heap tuning: mallopt, malloc_trim. Both daemons set their heap up at start (see
// `Applier.configureHeap` and `ControlServerApp.configureHeap`); the applier also trims it.
#include <malloc.h>
