#include <nftables/libnftables.h>
// malloc_trim: after a full program the applier hands freed heap back to the system;
// mallopt: it allocates from one heap arena.
#include <malloc.h>
