/** Stylesheets imported as text by page.ts. */
declare module "*.css" {
  const text: string;
  export default text;
}

/** The dashboard's script files, imported as text by page.ts (they are served to the browser, not run here). */
declare module "./assets/*.js" {
  const text: string;
  export default text;
}
