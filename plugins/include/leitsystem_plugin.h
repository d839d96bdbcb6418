/* Leitsystem driver plugin ABI, version 1. See plugins/README.md. */
#ifndef LEITSYSTEM_PLUGIN_H
#define LEITSYSTEM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define LEITSYSTEM_PLUGIN_ABI_VERSION 1u
#define LEITSYSTEM_PLUGIN_ENTRY "leitsystem_plugin_entry"

/* Called by the plugin, from any thread, to send one JSON message to the host. The host copies
   the bytes into a bounded queue and returns at once; it never blocks and never calls back. */
typedef void (*ls_emit_fn)(void *host_ctx, const uint8_t *message, size_t len);

/* What the host hands to create(). Valid until destroy() returns. */
typedef struct ls_host_api {
    uint32_t size;        /* sizeof(ls_host_api) as the host knows it */
    uint32_t abi_version; /* LEITSYSTEM_PLUGIN_ABI_VERSION of the host */
    void *ctx;            /* pass back to emit() unchanged */
    ls_emit_fn emit;
} ls_host_api;

/* Returned by the entry symbol; must stay valid while the library is loaded (a static). */
typedef struct ls_plugin_descriptor {
    uint32_t size;        /* sizeof(ls_plugin_descriptor): lets the ABI grow at the end */
    uint32_t abi_version; /* LEITSYSTEM_PLUGIN_ABI_VERSION the plugin was built for */
    const char *name;     /* NUL-terminated UTF-8, e.g. "sim" */
    const char *version;  /* e.g. "1.2.0" */
    const char *roles;    /* comma-separated: "scanner,buttons,printer,display" */
    /* Creates one device instance from its JSON config. Returns 0 and sets *instance, or
       non-zero and writes a NUL-terminated reason of at most err_cap bytes into err. */
    int32_t (*create)(const uint8_t *config, size_t config_len, const ls_host_api *host,
                      void **instance, char *err, size_t err_cap);
    /* Delivers one JSON message to an instance. 0 = accepted, else err as above. */
    int32_t (*send)(void *instance, const uint8_t *message, size_t len, char *err,
                    size_t err_cap);
    /* Stops the instance's threads (before returning) and frees it. */
    void (*destroy)(void *instance);
} ls_plugin_descriptor;

/* The one exported symbol. */
const ls_plugin_descriptor *leitsystem_plugin_entry(void);

#endif
