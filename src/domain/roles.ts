/** A user's role in one project. Operators (server admins) act as admin in every project. */
export const ROLES = ['admin', 'submitter', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

export type Action =
  | 'read' // see apps, jobs, batches, blobs, events
  | 'submit' // register apps and versions, submit and cancel jobs, upload blobs
  | 'manage'; // manage members

const ALLOWED: Record<Role, readonly Action[]> = {
  admin: ['read', 'submit', 'manage'],
  submitter: ['read', 'submit'],
  viewer: ['read'],
};

export function roleAllows(role: Role, action: Action): boolean {
  return ALLOWED[role].includes(action);
}
