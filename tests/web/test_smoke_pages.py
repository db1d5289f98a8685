"""Every page a department admin uses renders for them."""
import pytest


@pytest.fixture
def qa(make):
    department = make.department("QA Team")
    group = make.group(department, "Testers")
    make.device(department, "WIN-0859G9I39J0", group=group)
    make.user("qa-admin@example.com", "department_admin", department)
    return department


def test_department_admin_pages_render(client, auth, qa):
    assert auth.login("qa-admin@example.com").status_code == 303
    for url in ["/", "/departments", f"/departments/{qa.id}/settings",
                f"/departments/{qa.id}/exclusions", f"/departments/{qa.id}/devices",
                f"/departments/{qa.id}/groups", f"/departments/{qa.id}/members"]:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    page = client.get(f"/departments/{qa.id}/settings").get_data(as_text=True)
    assert "Show confirmation at the remote end" in page
    assert "WIN-0859G9I39J0" in page  # offered in the "Add an exclusion" picker
