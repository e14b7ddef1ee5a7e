/* Minimal NVTX v3 injection library that records events to a text file.
 *
 * Load it by exporting NVTX_INJECTION64_PATH=/path/libnvtx_record.so and
 * NVTX_RECORD_FILE=/path/events.tsv before the process starts.  One line per
 * event, tab separated:
 *   kind domain tid timestamp_ns category payload message range_id
 * kind: push/pop/start/end/mark, plus "category" for category-name
 * registrations (category column = id, message = name).
 * Domain handles and registered-string handles are heap copies of their names,
 * so the handle itself is the handle->string table entry.
 * Range ids are (pid << 32 | counter) so they stay unique across processes.
 */
#define _GNU_SOURCE
#define NVTX_NO_IMPL
#include <nvtx3/nvToolsExt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static FILE *g_out;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint_fast64_t g_next_range = 1;

static void lock(void) { pthread_mutex_lock(&g_lock); }
static void unlock(void) { pthread_mutex_unlock(&g_lock); }

static const char *dom_name(nvtxDomainHandle_t d) { return d ? (const char *)d : "default"; }

static void emit(const char *kind, const char *domain, uint32_t category,
                 const char *payload, const char *msg, uint64_t range_id)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    long tid = syscall(SYS_gettid);
    lock();
    fprintf(g_out, "%s\t%s\t%ld\t%lld\t%u\t%s\t", kind, domain, tid, now, category, payload);
    for (const char *p = msg ? msg : ""; *p; ++p) /* keep the line format intact */
        fputc((*p == '\t' || *p == '\n' || *p == '\r') ? ' ' : *p, g_out);
    fprintf(g_out, "\t%llu\n", (unsigned long long)range_id);
    fflush(g_out);
    unlock();
}

static void emit_attr(const char *kind, nvtxDomainHandle_t d,
                      const nvtxEventAttributes_t *a, uint64_t range_id)
{
    char payload[32] = "";
    const char *msg = NULL;
    uint32_t category = 0;
    if (a) {
        category = a->category;
        switch (a->payloadType) {
        case NVTX_PAYLOAD_TYPE_INT64: snprintf(payload, sizeof payload, "%lld", (long long)a->payload.llValue); break;
        case NVTX_PAYLOAD_TYPE_UNSIGNED_INT64: snprintf(payload, sizeof payload, "%llu", (unsigned long long)a->payload.ullValue); break;
        case NVTX_PAYLOAD_TYPE_INT32: snprintf(payload, sizeof payload, "%d", (int)a->payload.iValue); break;
        case NVTX_PAYLOAD_TYPE_UNSIGNED_INT32: snprintf(payload, sizeof payload, "%u", (unsigned)a->payload.uiValue); break;
        default: break;
        }
        if (a->messageType == NVTX_MESSAGE_TYPE_ASCII) msg = a->message.ascii;
        else if (a->messageType == NVTX_MESSAGE_TYPE_REGISTERED) msg = (const char *)a->message.registered;
    }
    emit(kind, dom_name(d), category, payload, msg, range_id);
}

static uint64_t new_range_id(void) { return ((uint64_t)getpid() << 32) | atomic_fetch_add(&g_next_range, 1); }

/* ---- NVTX_CB_MODULE_CORE2: domain API ---- */
static void DomainMarkEx(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) { emit_attr("mark", d, a, 0); }
static nvtxRangeId_t DomainRangeStartEx(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a)
{ uint64_t id = new_range_id(); emit_attr("start", d, a, id); return id; }
static void DomainRangeEnd(nvtxDomainHandle_t d, nvtxRangeId_t id) { emit("end", dom_name(d), 0, "", NULL, id); }
static int DomainRangePushEx(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) { emit_attr("push", d, a, 0); return 0; }
static int DomainRangePop(nvtxDomainHandle_t d) { emit("pop", dom_name(d), 0, "", NULL, 0); return 0; }
static void DomainNameCategoryA(nvtxDomainHandle_t d, uint32_t c, const char *name) { emit("category", dom_name(d), c, "", name, 0); }
static nvtxStringHandle_t DomainRegisterStringA(nvtxDomainHandle_t d, const char *s) { (void)d; return (nvtxStringHandle_t)strdup(s ? s : ""); }
static nvtxDomainHandle_t DomainCreateA(const char *name) { return (nvtxDomainHandle_t)strdup(name ? name : ""); }
static void DomainDestroy(nvtxDomainHandle_t d) { (void)d; /* keep names valid for late events */ }

/* ---- NVTX_CB_MODULE_CORE: default-domain API (torch.cuda.nvtx etc.) ---- */
static void MarkEx(const nvtxEventAttributes_t *a) { emit_attr("mark", NULL, a, 0); }
static void MarkA(const char *m) { emit("mark", "default", 0, "", m, 0); }
static nvtxRangeId_t RangeStartEx(const nvtxEventAttributes_t *a) { return DomainRangeStartEx(NULL, a); }
static nvtxRangeId_t RangeStartA(const char *m) { uint64_t id = new_range_id(); emit("start", "default", 0, "", m, id); return id; }
static void RangeEnd(nvtxRangeId_t id) { DomainRangeEnd(NULL, id); }
static int RangePushEx(const nvtxEventAttributes_t *a) { return DomainRangePushEx(NULL, a); }
static int RangePushA(const char *m) { emit("push", "default", 0, "", m, 0); return 0; }
static int RangePop(void) { return DomainRangePop(NULL); }
static void NameCategoryA(uint32_t c, const char *name) { DomainNameCategoryA(NULL, c, name); }

static void set_slot(NvtxFunctionTable table, unsigned int size, unsigned int id, NvtxFunctionPointer fn)
{
    if (table && id < size && table[id]) *table[id] = fn;
}

#define SET(tbl, size, cbid, fn) set_slot(tbl, size, cbid, (NvtxFunctionPointer)(fn))

int InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get)
{
    const char *path = getenv("NVTX_RECORD_FILE");
    if (!path || !*path || !(g_out = fopen(path, "a"))) {
        fprintf(stderr, "nvtx_record: cannot open NVTX_RECORD_FILE=%s\n", path ? path : "(unset)");
        return 0;
    }
    pthread_atfork(lock, unlock, unlock); /* a fork never inherits a held lock */
    const NvtxExportTableCallbacks *cb = (const NvtxExportTableCallbacks *)get(NVTX_ETID_CALLBACKS);
    NvtxFunctionTable t = NULL;
    unsigned int n = 0;
    if (!cb || !cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &t, &n) || !t) return 0;
    SET(t, n, NVTX_CBID_CORE2_DomainMarkEx, DomainMarkEx);
    SET(t, n, NVTX_CBID_CORE2_DomainRangeStartEx, DomainRangeStartEx);
    SET(t, n, NVTX_CBID_CORE2_DomainRangeEnd, DomainRangeEnd);
    SET(t, n, NVTX_CBID_CORE2_DomainRangePushEx, DomainRangePushEx);
    SET(t, n, NVTX_CBID_CORE2_DomainRangePop, DomainRangePop);
    SET(t, n, NVTX_CBID_CORE2_DomainNameCategoryA, DomainNameCategoryA);
    SET(t, n, NVTX_CBID_CORE2_DomainRegisterStringA, DomainRegisterStringA);
    SET(t, n, NVTX_CBID_CORE2_DomainCreateA, DomainCreateA);
    SET(t, n, NVTX_CBID_CORE2_DomainDestroy, DomainDestroy);
    if (!cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &t, &n) || !t) return 0;
    SET(t, n, NVTX_CBID_CORE_MarkEx, MarkEx);
    SET(t, n, NVTX_CBID_CORE_MarkA, MarkA);
    SET(t, n, NVTX_CBID_CORE_RangeStartEx, RangeStartEx);
    SET(t, n, NVTX_CBID_CORE_RangeStartA, RangeStartA);
    SET(t, n, NVTX_CBID_CORE_RangeEnd, RangeEnd);
    SET(t, n, NVTX_CBID_CORE_RangePushEx, RangePushEx);
    SET(t, n, NVTX_CBID_CORE_RangePushA, RangePushA);
    SET(t, n, NVTX_CBID_CORE_RangePop, RangePop);
    SET(t, n, NVTX_CBID_CORE_NameCategoryA, NameCategoryA);
    return 1;
}
