/*
 * The hypercall ABI shared by the hypervisor and its guests.
 *
 * Numbers, command values and error codes are Xen's own (xen/include/public/xen.h,
 * errno.h), so a trace or log line reads as it would on a real Xen host. Where our
 * transport differs from Xen's (guest handles are word offsets into the vCPU's
 * request slot rather than guest virtual addresses), the comment says so.
 *
 * 64-bit quantities (page-table entries, machine addresses, type_info) travel as two
 * unsigned 32-bit words, lo and hi, so hot paths never touch BigInt.
 */

/* ---------------------------------------------------------------- hypercalls */

export const __HYPERVISOR_mmu_update = 1;
export const __HYPERVISOR_set_gdt = 2;
export const __HYPERVISOR_memory_op = 12;
export const __HYPERVISOR_multicall = 13;
export const __HYPERVISOR_update_va_mapping = 14;
export const __HYPERVISOR_update_va_mapping_otherdomain = 22;
export const __HYPERVISOR_vcpu_op = 24;
export const __HYPERVISOR_mmuext_op = 26;
export const __HYPERVISOR_sched_op = 29;

export const HYPERCALL_NAMES: Readonly<Record<number, string>> = {
  1: 'mmu_update',
  2: 'set_gdt',
  12: 'memory_op',
  13: 'multicall',
  14: 'update_va_mapping',
  22: 'update_va_mapping_otherdomain',
  24: 'vcpu_op',
  26: 'mmuext_op',
  29: 'sched_op',
};

export const DOMID_SELF = 0x7ff0;
export const DOMID_IO = 0x7ff1;
export const DOMID_XEN = 0x7ff2;
/** Frame-table owner value of a frame that belongs to nobody (on the heap's free list). */
export const DOMID_INVALID = 0x7ff4;

/** sched_op commands (xen/include/public/sched.h). */
export const SCHEDOP_yield = 0;

/* ------------------------------------------------------------------- errno */

export const EPERM = 1; /** operation not permitted (Xen-private slot, foreign flush) */
export const ENOENT = 2; /** no such entry */
export const ESRCH = 3; /** no such domain */
export const EINTR = 4;
export const EIO = 5; /** I/O error (a guest's XFS buffer fill or read-back faulted) */
export const EAGAIN = 11;
export const ENOMEM = 12; /** out of memory (domain builder) */
export const EACCES = 13; /** permission denied (FLUSH_CACHE without cache-control rights) */
export const EFAULT = 14; /** a guest handle points outside the request slot */
export const EBUSY = 16; /** a page could not take PGT_writable_page */
export const EINVAL = 22; /** the request breaks a page-table rule */
export const ERANGE = 34;
export const ENOSYS = 38; /** unknown hypercall or command */
export const EOPNOTSUPP = 95; /** PV superpages were removed */
export const EUCLEAN = 117; /** structure needs cleaning (a guest's XFS block failed verification) */

export const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: 'EPERM',
  2: 'ENOENT',
  3: 'ESRCH',
  4: 'EINTR',
  5: 'EIO',
  11: 'EAGAIN',
  12: 'ENOMEM',
  13: 'EACCES',
  14: 'EFAULT',
  16: 'EBUSY',
  22: 'EINVAL',
  34: 'ERANGE',
  38: 'ENOSYS',
  95: 'EOPNOTSUPP',
  117: 'EUCLEAN',
};

export const ERRNO_BY_NAME: Readonly<Record<string, number>> = Object.fromEntries(
  Object.entries(ERRNO_NAMES).map(([n, name]) => [name, Number(n)]),
);

/** "ok" for rc >= 0, else the errno name of -rc ("EINVAL"). */
export function rcName(rc: number): string {
  if (rc >= 0) return 'ok';
  return ERRNO_NAMES[-rc] ?? `E${-rc}`;
}

/* ---------------------------------------------------------------- mmu_update */

export const MMU_NORMAL_PT_UPDATE = 0;
export const MMU_MACHPHYS_UPDATE = 1;
export const MMU_PT_UPDATE_PRESERVE_AD = 2;
export const MMU_PT_UPDATE_NO_TRANSLATE = 3;

/* ----------------------------------------------------------------- mmuext_op */

export const MMUEXT_PIN_L1_TABLE = 0;
export const MMUEXT_PIN_L2_TABLE = 1;
export const MMUEXT_PIN_L3_TABLE = 2;
export const MMUEXT_PIN_L4_TABLE = 3;
export const MMUEXT_UNPIN_TABLE = 4;
export const MMUEXT_NEW_BASEPTR = 5;
export const MMUEXT_TLB_FLUSH_LOCAL = 6;
export const MMUEXT_INVLPG_LOCAL = 7;
export const MMUEXT_TLB_FLUSH_MULTI = 8;
export const MMUEXT_INVLPG_MULTI = 9;
export const MMUEXT_TLB_FLUSH_ALL = 10;
export const MMUEXT_INVLPG_ALL = 11;
export const MMUEXT_FLUSH_CACHE = 12;
export const MMUEXT_SET_LDT = 13;
export const MMUEXT_NEW_USER_BASEPTR = 15;
export const MMUEXT_CLEAR_PAGE = 16;
export const MMUEXT_COPY_PAGE = 17;
export const MMUEXT_FLUSH_CACHE_GLOBAL = 18;
export const MMUEXT_MARK_SUPER = 19;
export const MMUEXT_UNMARK_SUPER = 20;

export const MMUEXT_NAMES: Readonly<Record<number, string>> = {
  0: 'pin_l1_table',
  1: 'pin_l2_table',
  2: 'pin_l3_table',
  3: 'pin_l4_table',
  4: 'unpin_table',
  5: 'new_baseptr',
  6: 'tlb_flush_local',
  7: 'invlpg_local',
  8: 'tlb_flush_multi',
  9: 'invlpg_multi',
  10: 'tlb_flush_all',
  11: 'invlpg_all',
  12: 'flush_cache',
  13: 'set_ldt',
  15: 'new_user_baseptr',
  16: 'clear_page',
  17: 'copy_page',
  18: 'flush_cache_global',
  19: 'mark_super',
  20: 'unmark_super',
};

export const MMUEXT_BY_NAME: Readonly<Record<string, number>> = Object.fromEntries(
  Object.entries(MMUEXT_NAMES).map(([n, name]) => [name, Number(n)]),
);

/* --------------------------------------------------------- update_va_mapping */

export const UVMF_NONE = 0;
export const UVMF_TLB_FLUSH = 1;
export const UVMF_INVLPG = 2;
export const UVMF_FLUSHTYPE_MASK = 3;
export const UVMF_MULTI = 0;
export const UVMF_LOCAL = 0;
export const UVMF_ALL = 4;

/* ------------------------------------------------------ page-table entries */
/*
 * Entry flags, all in the low word. NX is bit 63, i.e. bit 31 of the high word.
 * In an L1 entry bit 7 is PAT; in L2 and above it is PSE.
 */
export const _PAGE_PRESENT = 0x001;
export const _PAGE_RW = 0x002;
export const _PAGE_USER = 0x004;
export const _PAGE_PWT = 0x008;
export const _PAGE_PCD = 0x010;
export const _PAGE_ACCESSED = 0x020;
export const _PAGE_DIRTY = 0x040;
export const _PAGE_PSE = 0x080;
export const _PAGE_PAT = 0x080;
export const _PAGE_GLOBAL = 0x100;
export const _PAGE_AVAIL = 0xe00;
/** High-word bits. */
export const _PAGE_NX_HI = 0x80000000;
/** Bit 52: Xen marks x86_64 guest-kernel L1 entries with it. */
export const _PAGE_GUEST_KERNEL_HI = 0x00100000;
/** Bits 52..62: reserved to a PV guest. */
export const _PAGE_RESERVED_HI = 0x7ff00000;
/** Address bits 12..31 in the low word and 32..51 in the high word. */
export const PTE_ADDR_LO = 0xfffff000;
export const PTE_ADDR_HI = 0x000fffff;
export const PTE_FLAGS_LO = 0x00000fff;

export const PTE_FLAG_NAMES: Readonly<Record<string, number>> = {
  P: _PAGE_PRESENT,
  RW: _PAGE_RW,
  US: _PAGE_USER,
  PWT: _PAGE_PWT,
  PCD: _PAGE_PCD,
  A: _PAGE_ACCESSED,
  D: _PAGE_DIRTY,
  PSE: _PAGE_PSE,
  PAT: _PAGE_PAT,
  G: _PAGE_GLOBAL,
};

/* ---------------------------------------------------------------- page types */
/*
 * type_info is 64 bits in Xen: type in the top 3 bits, then flags, then a 55-bit type
 * count. We keep the top 32 bits (type + flags) in one Uint32 column and the count in
 * another; these constants are the top-word values (Xen >= 4.10 encoding).
 */
export const PGT_none = 0x00000000;
export const PGT_l1_page_table = 0x20000000;
export const PGT_l2_page_table = 0x40000000;
export const PGT_l3_page_table = 0x60000000;
export const PGT_l4_page_table = 0x80000000;
export const PGT_seg_desc_page = 0xa0000000;
export const PGT_shared_page = 0xc0000000;
export const PGT_writable_page = 0xe0000000;
export const PGT_type_mask = 0xe0000000;
export const PGT_locked = 0x10000000;
export const PGT_pinned = 0x08000000;
export const PGT_validated = 0x04000000;
export const PGT_pae_xen_l2 = 0x02000000;
export const PGT_partial = 0x01000000;

export const PGT_NAMES: Readonly<Record<number, string>> = {
  0: 'none',
  536870912: 'l1_page_table',
  1073741824: 'l2_page_table',
  1610612736: 'l3_page_table',
  2147483648: 'l4_page_table',
  2684354560: 'seg_desc_page',
  3221225472: 'shared_page',
  3758096384: 'writable_page',
};

/** PGT_lN_page_table for level 1..4. */
export function pgtForLevel(level: number): number {
  return (level << 29) >>> 0;
}

/** 1..4 for a page-table type, 0 otherwise. */
export function levelOfType(type: number): number {
  const l = type >>> 29;
  return l >= 1 && l <= 4 ? l : 0;
}

/* -------------------------------------------------------------- paging modes */

export type PagingMode = 'pae' | 'x86_64';
export const PAGING_MODES: readonly PagingMode[] = ['pae', 'x86_64'];

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
export const ENTRIES_PER_TABLE = 512;
/** Words (Uint32) per frame. */
export const FRAME_WORDS = 1024;
