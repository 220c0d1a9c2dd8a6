/** Stylesheets imported as text by page.ts. */
declare module "*.css" {
  const text: string;
  export default text;
}
