/*
 * The flags of the vmalloc space: vmap_area's state (aFlags) and vm_struct's (aVmFlags).
 * What each state means is in vmap_area.ts's invariants.
 */

/** vmap_area.flags, with 2.6.28's values. */
export const VM_LAZY_FREE = 0x01;
export const VM_LAZY_FREEING = 0x02;
export const VM_VM_AREA = 0x04;
/** Model-private area flags: a per-CPU vmap block; a vm_map_ram mapping too big for one. */
export const VA_VMAP_BLOCK = 0x10;
export const VA_RAM = 0x20;

/** vm_struct.flags (kept per area, in aVmFlags), with Linux's values. */
export const VM_IOREMAP = 0x01;
export const VM_ALLOC = 0x02;
export const VM_MAP = 0x04;
export const VM_USERMAP = 0x08;
export const VM_VPAGES = 0x10;
/** Model: the area holds a page reference per mapped page (vmap_pages). */
export const VM_HOLD_REFS = 0x100;
