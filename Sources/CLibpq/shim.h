// The only C this project touches: libpq's public header (Debian: libpq-dev).
#ifndef METER_CLIBPQ_SHIM_H
#define METER_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
