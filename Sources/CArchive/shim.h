#ifndef KDTOOL_CARCHIVE_SHIM_H
#define KDTOOL_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>
#endif
