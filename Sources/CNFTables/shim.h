#include <nftables/libnftables.h>
// malloc_trim: after a full program the applier hands freed heap back to the system.
#include <malloc.h>
